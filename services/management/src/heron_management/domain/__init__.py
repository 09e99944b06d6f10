"""Management's pure rules: no FastAPI, SQL, NATS or gRPC imports here."""
