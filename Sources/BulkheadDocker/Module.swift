/// Docker Engine API client (see DockerClient.swift).
public enum BulkheadDockerModule {}
