"""rmfproxy.relay"""
