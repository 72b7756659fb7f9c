"""A real local Kubernetes control plane built from published Go modules.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake nodes)
and metrics-server run as plain local processes on 127.0.0.1; no container
engine is needed. ``hack/cluster.py`` is the command-line entry point; tests use
:func:`localcluster.cluster.ensure_up` through their session fixture.
"""
