import Testing

// Replaced as the layer's tests are written.
@Test func mountLayerBuilds() {}
