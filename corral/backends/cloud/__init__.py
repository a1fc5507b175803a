"""Cloud backends (SPEC §6, issue 13): EC2 through boto3 and any provider through Apache Libcloud.

The shared pieces live here: :mod:`ratelimit` (one token bucket per cloud account, shared by every
pool on that account in this process), :mod:`tags` (what marks a machine as corral's, and the
filter ``list()`` applies), and :mod:`batching` (coalescing concurrent describes and terminates).
This package must not import boto3 or libcloud at import time: each backend module imports its own
SDK, so that installing one extra is enough for that backend.
"""
