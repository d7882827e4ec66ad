"""Reading grouped_chats exports: streaming parse, record normalisation, storage."""
