"""Drives the sans-IO protocol machines with real UDP sockets on worker threads and publishes their
events on a bus."""
