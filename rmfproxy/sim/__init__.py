"""rmfproxy.sim"""
