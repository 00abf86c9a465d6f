"""The only code that imports anthropic or httpx2: the seams put into the SDK."""
