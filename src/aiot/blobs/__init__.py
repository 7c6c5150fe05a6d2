"""Package and log archives in a blob store: the NATS object store or Azure Blob storage (README.md)."""
