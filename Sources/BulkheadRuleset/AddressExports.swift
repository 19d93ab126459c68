// The address types live in the leaf target BulkheadAddress, shared with the inventory;
// re-exported so every importer of the model keeps seeing `IPv4Address` and `IPv6Address`.
@_exported import BulkheadAddress
