"""Triton kernels. Nothing here knows about minitf's model."""
