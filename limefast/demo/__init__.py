"""``make demo``: the digits CNN trained here (``digits``), explained into PNG panels and timed
against lime (``run``); ``python -m limefast.demo``."""
