"""The embedded stack: the real services (Kafka-protocol broker, Redis, Triton) started on one machine."""
