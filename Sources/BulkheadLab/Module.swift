/// Test hosts in network namespaces and traffic probes (see Lab.swift).
public enum BulkheadLabModule {}
