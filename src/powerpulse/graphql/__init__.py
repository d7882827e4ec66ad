"""The GraphQL API: types, resolvers and the schema. Resolvers only translate and delegate."""
