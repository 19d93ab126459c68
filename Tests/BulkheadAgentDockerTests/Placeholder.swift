import Testing
@Test func agentDockerPlaceholder() {}
