"""The REST API: thin routes (parse → use case → response model) and RFC 9457 problem responses."""
