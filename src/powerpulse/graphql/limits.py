"""Limits on what one GraphQL document may ask for: depth, aliases, repeats and cost.

The document is measured after parsing and before validation; one over a limit is refused
with QUERY_TOO_COMPLEX and neither validated nor run. Measuring first matters: graphql-core's
standard rules can spend seconds of CPU on a small document that selects one field hundreds
of times, and strawberry's QueryDepthLimiter and MaxAliasesLimiter walk a fragment again at
every spread, which takes exponential time on a document spreading fragments within
fragments ("fragment bomb"). Here every fragment is measured once and reused at each of its
spreads, so measuring takes time linear in the document, while the spreads still count in
full: fragments cannot hide aliases, depth or cost. The token limit is the parser's own
(strawberry's MaxTokensLimiter) and stops a document before it is measured.

- depth: fields nested in fields; a top-level field is at depth 0 (as QueryDepthLimiter).
- aliases: aliased fields, a fragment's counted at every spread (as MaxAliasesLimiter).
- repeats: how often one response name is selected in one selection set, fragments
  included (graphql-core compares every such pair to check they can be merged).
- cost: the sum over object-typed fields of the product of the sizes of the lists they are
  in. A field with a `first` or `limit` argument is a list of that size (its value, a
  variable's value, or the schema default when absent or null; capped at the largest size
  the services accept, since anything larger fails when the field runs); other lists count
  with a fixed size (LIST_SIZES); a connection's `edges` are counted by its `first`.
  Scalar fields are free. Introspection fields count for aliases and repeats only: the
  schema bounds them, and introspection is off in production.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
)
from strawberry.extensions import SchemaExtension

from ..metric_definitions import METRIC_DEFINITIONS
from ..services.analytics import FIRST_RESPONSE_EDGES, MAX_TOPICS

QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"

# Lists without a size argument, by (type, field): how many items one counts as.
TIMESERIES_BUCKETS = 100
LIST_SIZES: Mapping[tuple[str, str], int] = {
    ("Query", "timeseries"): TIMESERIES_BUCKETS,
    ("Query", "activityHeatmap"): 7 * 24,
    ("Query", "firstResponseTimeHistogram"): len(FIRST_RESPONSE_EDGES) + 2,
    ("Query", "metricDefinitions"): len(METRIC_DEFINITIONS),
}
# Any other list of objects (a field nobody sized yet) counts as a full page.
DEFAULT_LIST_SIZE = 100

# Selection sets nested deeper than this, through fields or fragments, are refused
# unmeasured: it bounds the recursion, far above any depth limit that makes sense.
MAX_NESTING = 128

# The parser's token limit (MaxTokensLimiter) raises a syntax error without a code.
_TOKEN_LIMIT = re.compile(r"^Syntax Error: Document contains more than \d+ tokens\.")


def limit_error_code(message: str) -> str | None:
    """The code of a limit error raised without one (the parser's token limit)."""
    return QUERY_TOO_COMPLEX if _TOKEN_LIMIT.match(message) else None


@dataclass(frozen=True)
class DocumentLimits:
    max_depth: int = 10
    max_aliases: int = 15
    max_repeats: int = 20
    max_cost: int = 50_000
    # Largest `first` and `limit` the services accept; larger values fail when they run.
    max_page_size: int = 100
    max_limit: int = MAX_TOPICS


@dataclass(frozen=True)
class Measure:
    depth: int = 0
    aliases: int = 0
    repeats: int = 0
    cost: int = 0

    def __add__(self, other: Measure) -> Measure:
        return Measure(
            max(self.depth, other.depth),
            self.aliases + other.aliases,
            max(self.repeats, other.repeats),
            self.cost + other.cost,
        )


class Unmeasurable(Exception):
    """Selections nest deeper than MAX_NESTING."""


class _Measurer:
    """Measures selection sets; each fragment once, however often it is spread."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        limits: DocumentLimits,
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.variables = variables
        self.fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        # A fragment's measure, and how often it selects each response name at its top.
        self._fragments: dict[str, tuple[Measure, Counter[str]]] = {}
        self._measuring: set[str] = set()
        self._defaults: Mapping[str, ValueNode | None] = {}
        self._nesting = 0

    def operation(self, operation: OperationDefinitionNode) -> Measure:
        self._defaults = {
            definition.variable.name.value: definition.default_value
            for definition in operation.variable_definitions or ()
        }
        root = self.schema.get_root_type(operation.operation)
        return self.scope(root, operation.selection_set) if root else Measure()

    def scope(self, parent: GraphQLNamedType | None, selection_set: SelectionSetNode) -> Measure:
        """A selection set whose fields are merged together: a field's or an operation's."""
        measure, names = self.selections(parent, selection_set)
        return measure + Measure(repeats=max(names.values(), default=0))

    def selections(
        self, parent: GraphQLNamedType | None, selection_set: SelectionSetNode
    ) -> tuple[Measure, Counter[str]]:
        self._nesting += 1
        try:
            if self._nesting > MAX_NESTING:
                raise Unmeasurable
            measure = Measure()
            names: Counter[str] = Counter()
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    names[(selection.alias or selection.name).value] += 1
                    measure += self.field(parent, selection)
                    continue
                if isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    target = self.schema.get_type(condition.name.value) if condition else parent
                    found, found_names = self.selections(target, selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    found, found_names = self.fragment(selection.name.value)
                else:  # pragma: no cover - the grammar has no other selections
                    continue
                measure += found
                names.update(found_names)
            return measure, names
        finally:
            self._nesting -= 1

    def fragment(self, name: str) -> tuple[Measure, Counter[str]]:
        if name in self._fragments:
            return self._fragments[name]
        definition = self.fragments.get(name)
        if definition is None or name in self._measuring:
            return Measure(), Counter()  # unknown or cyclic: validation reports it
        self._measuring.add(name)
        try:
            target = self.schema.get_type(definition.type_condition.name.value)
            found = self.selections(target, definition.selection_set)
        finally:
            self._measuring.discard(name)
        self._fragments[name] = found
        return found

    def field(self, parent: GraphQLNamedType | None, node: FieldNode) -> Measure:
        own = Measure(aliases=1 if node.alias else 0)
        if node.selection_set is None:
            return own
        name = node.name.value
        definition = (
            parent.fields.get(name)
            if isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType))
            else None
        )
        target = get_named_type(definition.type) if definition else None
        below = self.scope(target, node.selection_set)
        if definition is None or name.startswith("__") or not is_composite_type(target):
            # Introspection, or a field validation will refuse: aliases and repeats only.
            return own + Measure(aliases=below.aliases, repeats=below.repeats)
        size = self.size(parent.name if parent else "", name, definition, node)
        return own + Measure(
            depth=below.depth + 1,
            aliases=below.aliases,
            repeats=below.repeats,
            cost=1 + size * below.cost,
        )

    def size(self, parent: str, name: str, definition: GraphQLField, node: FieldNode) -> int:
        """How many items the field's selection runs for."""
        for argument, most in (
            ("first", self.limits.max_page_size),
            ("limit", self.limits.max_limit),
        ):
            if argument in definition.args:
                value = self.argument(node, argument)
                if value is None:
                    value = definition.args[argument].default_value
                if not isinstance(value, int) or isinstance(value, bool):
                    value = most  # not an integer: refused when it runs; count it as large
                return max(0, min(value, most))
        if not is_list_type(get_nullable_type(definition.type)):
            return 1
        if name == "edges" and parent.endswith("Connection"):
            return 1  # counted by the connection's `first`
        return LIST_SIZES.get((parent, name), DEFAULT_LIST_SIZE)

    def argument(self, node: FieldNode, name: str) -> Any:
        """The argument's value as written or through its variable; None when absent/null."""
        for argument in node.arguments or ():
            if argument.name.value != name:
                continue
            value: Any = argument.value
            if isinstance(value, VariableNode):
                variable = value.name.value
                if variable in self.variables:
                    value = self.variables[variable]
                    if isinstance(value, float) and value.is_integer():
                        return int(value)
                    return value
                value = self._defaults.get(variable)
            if value is None or isinstance(value, NullValueNode):
                return None
            if isinstance(value, IntValueNode):
                return int(value.value)
            return "not an integer"
        return None


def measure_operations(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    limits: DocumentLimits | None = None,
) -> Iterator[tuple[OperationDefinitionNode, Measure]]:
    """Every operation of the document with its measure.

    Raises Unmeasurable when selections nest deeper than MAX_NESTING.
    """
    measurer = _Measurer(schema, document, limits or DocumentLimits(), variables or {})
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            yield definition, measurer.operation(definition)


def limit_errors(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    limits: DocumentLimits,
) -> list[GraphQLError]:
    """One QUERY_TOO_COMPLEX error per limit an operation of the document exceeds."""
    try:
        measured = list(measure_operations(schema, document, variables, limits))
    except (Unmeasurable, RecursionError):
        return [_error(f"the document nests selections more than {MAX_NESTING} levels deep")]
    return [
        _error(message, operation)
        for operation, measure in measured
        for message in _violations(operation, measure, limits)
    ]


def _error(message: str, node: OperationDefinitionNode | None = None) -> GraphQLError:
    return GraphQLError(message, node, extensions={"code": QUERY_TOO_COMPLEX})


def _violations(
    operation: OperationDefinitionNode, measure: Measure, limits: DocumentLimits
) -> Iterator[str]:
    name = f"operation '{operation.name.value}'" if operation.name else "the operation"
    if measure.depth > limits.max_depth:
        yield (
            f"{name} nests fields {measure.depth} levels deep; at most {limits.max_depth} "
            "are allowed"
        )
    if measure.aliases > limits.max_aliases:
        yield (
            f"{name} uses {_count(measure.aliases)} aliases (a fragment's count at every "
            f"spread); at most {limits.max_aliases} are allowed"
        )
    if measure.repeats > limits.max_repeats:
        yield (
            f"{name} selects one field {_count(measure.repeats)} times in one selection set "
            f"(fragments included); at most {limits.max_repeats} are allowed"
        )
    if measure.cost > limits.max_cost:
        yield (
            f"{name} is too expensive: its estimated cost is {_count(measure.cost)}, at most "
            f"{limits.max_cost:,} is allowed (nested lists multiply their page sizes: ask "
            "for smaller pages or fewer nested lists)"
        )


def _count(value: int) -> str:
    return f"{value:,}" if value < 10**12 else "more than 10^12"


class DocumentLimitsExtension(SchemaExtension):
    """Refuses an operation over the limits before it is validated or run."""

    def __init__(self, limits: DocumentLimits) -> None:
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.pre_execution_errors is None:
            errors = limit_errors(context.schema._schema, document, context.variables, self.limits)
            if errors:
                # Set before validation runs, which it then skips: nothing expensive runs.
                context.pre_execution_errors = errors
        yield


def document_limits_extension(limits: DocumentLimits) -> Callable[[], SchemaExtension]:
    """A factory: strawberry builds a fresh extension for every operation."""
    return lambda: DocumentLimitsExtension(limits)
