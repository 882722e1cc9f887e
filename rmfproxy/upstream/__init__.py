"""rmfproxy.upstream"""
