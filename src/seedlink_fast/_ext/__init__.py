"""Compiled kernels. Their Cython sources live in the repository's src/_ext/."""
