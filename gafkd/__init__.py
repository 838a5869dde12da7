"""gafkd: Gramian Angular Field imaging and knowledge distillation for wearable sensor data."""

__version__ = "0.1.0.dev0"
