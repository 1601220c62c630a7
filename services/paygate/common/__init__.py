"""Pieces shared by the gateway, the banks and the tools: config, TLS, storage, interceptors."""
