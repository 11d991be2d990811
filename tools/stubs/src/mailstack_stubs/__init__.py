"""Stub ElasticEmail v4 and SendGrid v3 HTTP servers with a control API for tests."""
