"""rmfproxy.ops"""
