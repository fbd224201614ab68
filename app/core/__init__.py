"""Services shared by the REST API, the Socket.IO namespaces and the CLI."""
