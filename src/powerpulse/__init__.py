"""PowerPulse: conversation analytics for customer-service chats, served over GraphQL."""

__version__ = "0.1.0"
