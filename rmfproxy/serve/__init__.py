"""rmfproxy.serve"""
