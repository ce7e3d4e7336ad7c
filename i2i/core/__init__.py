"""The foundation every part may import: errors, table schemas and IO, event records, shared helpers."""
