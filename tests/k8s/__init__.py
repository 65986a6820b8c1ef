"""Offline checks of the Kubernetes deployment in k8s/ (was tests/test_k8s.py), by topic."""
