// Azure DNS Private Resolver that sends the alias zone (db.internal.) to
// dns-sidecar, for every VNet linked to its forwarding ruleset: option (a) in
// deploy/azure/README.md.
//
//   resolver VNet ──outbound endpoint──> dns-sidecar (forwarder Service's
//   internal LB IP, or the sidecar VMs) for db.internal.; everything else is
//   resolved by Azure DNS as before.
//
// Deploy into the resource group of the resolver's (hub) VNet:
//
//   az deployment group create -g rg-hub -f deploy/azure/resolver.bicep \
//     -p vnetName=vnet-hub outboundSubnetPrefix=10.10.255.0/28 \
//        sidecarAddresses='["10.224.0.53"]' \
//        linkedVnetIds='["/subscriptions/<sub>/resourceGroups/rg-app/providers/Microsoft.Network/virtualNetworks/vnet-app"]'
//
// The outbound endpoint must be able to reach the sidecar addresses on port
// 53 (same VNet, or peered; NSGs allowing UDP and TCP 53).

@description('Location of the resolver (the VNet\'s region).')
param location string = resourceGroup().location

@description('Name of the existing VNet that hosts the resolver (in this resource group).')
param vnetName string

@description('Name of the new subnet for the outbound endpoint (delegated to the resolver; nothing else may use it).')
param outboundSubnetName string = 'snet-dns-outbound'

@description('Address prefix of that subnet, /28 or larger, inside the VNet\'s address space and unused.')
param outboundSubnetPrefix string

@description('Name of the DNS Private Resolver.')
param resolverName string = 'dnspr-dns-sidecar'

@description('Name of the DNS forwarding ruleset.')
param rulesetName string = 'dnsrs-dns-sidecar'

@description('The zone dns-sidecar is authoritative for, with the trailing dot.')
param aliasZone string = 'db.internal.'

@description('Name of the forwarding rule for that zone.')
param aliasRuleName string = 'dns-sidecar-db-internal'

@description('Addresses of the dns-sidecar instances: the forwarder Service\'s internal load balancer IP, or the IPs of sidecar VMs (at most 6).')
@minLength(1)
@maxLength(6)
param sidecarAddresses array

@description('DNS port of the sidecar instances.')
param sidecarPort int = 53

@description('Resource IDs of the VNets whose clients should resolve the aliases (the application VNets). Do not link a VNet that the resolver\'s inbound endpoint serves if a rule points back at it.')
param linkedVnetIds array = []

resource vnet 'Microsoft.Network/virtualNetworks@2023-09-01' existing = {
  name: vnetName
}

resource outboundSubnet 'Microsoft.Network/virtualNetworks/subnets@2023-09-01' = {
  parent: vnet
  name: outboundSubnetName
  properties: {
    addressPrefix: outboundSubnetPrefix
    delegations: [
      {
        name: 'Microsoft.Network.dnsResolvers'
        properties: {
          serviceName: 'Microsoft.Network/dnsResolvers'
        }
      }
    ]
  }
}

resource resolver 'Microsoft.Network/dnsResolvers@2022-07-01' = {
  name: resolverName
  location: location
  properties: {
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource outboundEndpoint 'Microsoft.Network/dnsResolvers/outboundEndpoints@2022-07-01' = {
  parent: resolver
  name: 'outbound'
  location: location
  properties: {
    subnet: {
      id: outboundSubnet.id
    }
  }
}

resource ruleset 'Microsoft.Network/dnsForwardingRulesets@2022-07-01' = {
  name: rulesetName
  location: location
  properties: {
    dnsResolverOutboundEndpoints: [
      {
        id: outboundEndpoint.id
      }
    ]
  }
}

// db.internal. -> the sidecars. The resolver spreads queries over the targets
// and fails over between them.
resource aliasRule 'Microsoft.Network/dnsForwardingRulesets/forwardingRules@2022-07-01' = {
  parent: ruleset
  name: aliasRuleName
  properties: {
    domainName: aliasZone
    forwardingRuleState: 'Enabled'
    targetDnsServers: [for ip in sidecarAddresses: {
      ipAddress: ip
      port: sidecarPort
    }]
  }
}

// The ruleset applies to the VNets linked here (peering is not needed for
// that, only the link).
resource links 'Microsoft.Network/dnsForwardingRulesets/virtualNetworkLinks@2022-07-01' = [for (id, i) in linkedVnetIds: {
  parent: ruleset
  name: 'link-${i}-${last(split(id, '/'))}'
  properties: {
    virtualNetwork: {
      id: id
    }
  }
}]

output resolverId string = resolver.id
output outboundEndpointId string = outboundEndpoint.id
output rulesetId string = ruleset.id
output forwardingRuleId string = aliasRule.id
