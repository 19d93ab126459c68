/// JSON Schemas of the file formats, printed by `bulkhead schema`, for editors' YAML language servers.
///
/// Draft-07, the draft every YAML language server supports. The schema checks shape only; names of
/// services across files, redundant flows and the like need `bulkhead validate`.
public enum JSONSchemas {
    public static let policy = #"""
    {
      "$schema": "http://json-schema.org/draft-07/schema#",
      "$id": "bulkhead-policy-v1.json",
      "title": "Bulkhead segment policy (format v1)",
      "description": "One YAML document per segment: the services of a segment and the flows allowed to and from them. Everything not listed is denied.",
      "type": "object",
      "additionalProperties": false,
      "required": ["segment", "networks", "services"],
      "properties": {
        "segment": { "$ref": "#/definitions/name", "description": "Segment name, unique across all policy files." },
        "description": { "type": "string" },
        "mode": { "enum": ["enforce", "audit"], "default": "enforce", "description": "enforce drops denied traffic; audit logs and counts it and lets it through." },
        "networks": {
          "type": "array", "minItems": 1, "uniqueItems": true,
          "items": { "type": "string", "minLength": 1 },
          "description": "Docker networks this segment governs."
        },
        "services": {
          "type": "object", "minProperties": 1,
          "propertyNames": { "$ref": "#/definitions/name" },
          "additionalProperties": { "$ref": "#/definitions/service" },
          "description": "Service name -> label selector."
        },
        "flows": {
          "type": ["array", "null"],
          "items": { "$ref": "#/definitions/flow" },
          "description": "Allowed flows. Missing or empty: nothing is allowed."
        }
      },
      "definitions": {
        "name": {
          "type": "string", "maxLength": 63,
          "pattern": "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
          "not": { "enum": ["world", "host"] }
        },
        "service": {
          "type": "object", "additionalProperties": false, "required": ["labels"],
          "properties": {
            "labels": {
              "type": "object", "minProperties": 1,
              "additionalProperties": { "type": "string" },
              "description": "A container belongs to the service when it carries all of these labels with these values."
            },
            "networks": {
              "type": "array", "minItems": 1, "uniqueItems": true, "items": { "type": "string" },
              "description": "Optional: only containers attached to one of these Docker networks belong to the service."
            },
            "description": { "type": "string" }
          }
        },
        "endpoint": {
          "oneOf": [
            { "type": "string", "pattern": "^(world|host|[a-z0-9]([a-z0-9-]*[a-z0-9])?(/[a-z0-9]([a-z0-9-]*[a-z0-9])?)?)$",
              "description": "NAME (a service of this segment), SEGMENT/NAME, world or host." },
            { "type": "object", "additionalProperties": false, "required": ["cidr"],
              "properties": { "cidr": { "type": "string", "description": "IPv4 or IPv6 prefix such as 192.0.2.0/24." } } }
          ]
        },
        "endpoints": {
          "oneOf": [
            { "$ref": "#/definitions/endpoint" },
            { "type": "array", "minItems": 1, "items": { "$ref": "#/definitions/endpoint" } }
          ]
        },
        "port": {
          "type": "string",
          "pattern": "^((tcp|udp)/[0-9]{1,5}(-[0-9]{1,5})?|icmp|any)$",
          "description": "tcp/N, tcp/N-M, udp/N, udp/N-M, icmp or any."
        },
        "flow": {
          "type": "object", "additionalProperties": false, "required": ["from", "to", "ports"],
          "properties": {
            "from": { "$ref": "#/definitions/endpoints" },
            "to": { "$ref": "#/definitions/endpoints" },
            "ports": { "type": "array", "minItems": 1, "items": { "$ref": "#/definitions/port" } },
            "description": { "type": "string" }
          }
        }
      }
    }
    """#

    public static let inventory = #"""
    {
      "$schema": "http://json-schema.org/draft-07/schema#",
      "$id": "bulkhead-inventory-v1.json",
      "title": "Bulkhead inventory snapshot",
      "description": "Container networks and containers, as Docker reports them; used when Docker is not available.",
      "type": "object",
      "additionalProperties": false,
      "properties": {
        "host": {
          "type": "object", "additionalProperties": false,
          "properties": { "addresses": { "type": "array", "items": { "type": "string" }, "description": "The host's own addresses beyond the gateways." } }
        },
        "networks": {
          "type": "array",
          "items": {
            "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {
              "name": { "type": "string" },
              "subnets": { "type": "array", "items": { "type": "string" } },
              "gateways": { "type": "array", "items": { "type": "string" }, "description": "The host's addresses on this network." },
              "bridge": { "type": "string", "maxLength": 15, "description": "The Linux bridge of the network on the host." }
            }
          }
        },
        "containers": {
          "type": "array",
          "items": {
            "type": "object", "additionalProperties": false, "required": ["name", "networks"],
            "properties": {
              "name": { "type": "string" },
              "id": { "type": "string" },
              "labels": { "type": "object", "additionalProperties": { "type": "string" } },
              "networks": {
                "type": "object",
                "additionalProperties": {
                  "type": ["object", "null"], "additionalProperties": false,
                  "properties": {
                    "ipv4": { "type": "string" }, "ipv6": { "type": "string" },
                    "mac": { "type": "string", "pattern": "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$", "description": "MAC address of the container's interface." },
                    "port": { "type": "string", "maxLength": 15, "description": "Host-side interface (bridge port) of the container's link: frames from it must carry this attachment's addresses." }
                  }
                }
              }
            }
          }
        }
      }
    }
    """#
}
