"""The pure, synchronous numerical core: no broker, network or asyncio code here."""
