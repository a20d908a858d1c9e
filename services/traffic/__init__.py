"""Synthetic search traffic grounded in a catalog: events, the conversions after them, and labels."""

from services.traffic.generator import Traffic, TrafficConfig, generate_traffic
from services.traffic.shape import TrafficShape, traffic_shape

__all__ = ["Traffic", "TrafficConfig", "TrafficShape", "generate_traffic", "traffic_shape"]
