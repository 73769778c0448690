"""Disposable PostgreSQL servers: binaries found on this machine, local clusters, containers, their cleanup.

pgbin       installations of PostgreSQL found on this machine (versions, tools, extensions)
account     the unprivileged system account a server runs as when backupcheck runs as root
templates   an initdb'd template per installation, copied for every new cluster
cluster     a throwaway local cluster (private socket, no TCP, pid files, sweeps after a crash)
containers  a throwaway server in a container on the Docker engine (labelled, swept)
"""
