"""The Faust app: topics and thin agents that hand records to the plain handlers in ``services``."""
