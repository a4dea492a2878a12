"""Runtimes that move values between the core functions: in-process asyncio (embedded)."""
