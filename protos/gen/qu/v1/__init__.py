"""Generated from protos/qu/v1: do not edit; run protos/generate.sh."""
