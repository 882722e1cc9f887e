"""rmfproxy.rtsp"""
