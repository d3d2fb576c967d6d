"""The operator console: queues, jobs and failures on a page of its own listener, live, read
through the Store protocol alone (`server.py` starts it, `pages.py` answers, `live.py` streams).
"""
