"""Helpers the tests share: peers, namespaces, simulated networks, samples. No tests here."""
