// The address types live in the leaf target BulkheadAddress, shared with the ruleset model;
// re-exported so every importer of the inventory keeps seeing `IPAddress` and `IPNetwork`.
@_exported import BulkheadAddress
