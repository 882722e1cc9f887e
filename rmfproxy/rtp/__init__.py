"""rmfproxy.rtp"""
