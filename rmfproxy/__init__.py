"""rmfproxy: an asyncio RTSP failover proxy for video-surveillance sites."""

__version__ = "0.1.0"
