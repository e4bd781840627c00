// The forwarding ruleset for VMs (issue 17): db.internal. -> the dns-sidecar
// forwarder tier, added to a DNS Private Resolver that already exists (a hub
// usually has one, and a VNet can hold only one). resolver.bicep creates a
// resolver and this same rule from scratch; use this file when the resolver
// and its outbound endpoint are already there.
//
// VMs (and App Service, Functions, ...) in the linked VNets keep using Azure
// DNS (168.63.129.16); only db.internal. goes to the tier, whose instances
// probe PostgreSQL (one connection each) and answer the aliases. Pods on AKS
// reach the same tier through CoreDNS instead
// (deploy/kubernetes/coredns/coredns-custom.yaml).
//
//   az deployment group create -g rg-hub -f deploy/azure/forwarding-ruleset.bicep \
//     -p outboundEndpointId=$(az dns-resolver outbound-endpoint show -g rg-hub \
//          --dns-resolver-name dnspr-hub -n outbound --query id -o tsv) \
//        tierAddresses='["10.224.0.53"]' \
//        linkedVnetIds='["/subscriptions/<sub>/resourceGroups/rg-vms/providers/Microsoft.Network/virtualNetworks/vnet-vms"]'
//
// tierAddresses: the forwarder Service's internal load balancer IP
// (deploy/kubernetes/forwarder/service.yaml, pinned with its
// azure-load-balancer-ipv4 annotation), or the private IPs of tier VMs
// (deploy/systemd). Not the in-cluster ClusterIP (10.0.0.53): it is not
// reachable from the VNet. The outbound endpoint must reach these on UDP and
// TCP 53 (NSGs).

@description('Location of the ruleset: the resolver\'s region.')
param location string = resourceGroup().location

@description('Resource ID of the existing outbound endpoint of the DNS Private Resolver.')
param outboundEndpointId string

@description('Name of the DNS forwarding ruleset to create.')
param rulesetName string = 'dnsrs-dns-sidecar-tier'

@description('The alias zone the forwarder tier serves, with the trailing dot.')
param aliasZone string = 'db.internal.'

@description('Name of the forwarding rule for that zone.')
param aliasRuleName string = 'dns-sidecar-tier-db-internal'

@description('Addresses of the forwarder tier: its internal load balancer IP, or tier VMs (1 to 6). The resolver spreads queries over them and fails over between them.')
@minLength(1)
@maxLength(6)
param tierAddresses array

@description('DNS port of the tier.')
param tierPort int = 53

@description('Resource IDs of the VNets whose VMs should resolve the aliases.')
param linkedVnetIds array = []

resource ruleset 'Microsoft.Network/dnsForwardingRulesets@2022-07-01' = {
  name: rulesetName
  location: location
  properties: {
    dnsResolverOutboundEndpoints: [
      {
        id: outboundEndpointId
      }
    ]
  }
}

resource aliasRule 'Microsoft.Network/dnsForwardingRulesets/forwardingRules@2022-07-01' = {
  parent: ruleset
  name: aliasRuleName
  properties: {
    domainName: aliasZone
    forwardingRuleState: 'Enabled'
    targetDnsServers: [for ip in tierAddresses: {
      ipAddress: ip
      port: tierPort
    }]
  }
}

resource links 'Microsoft.Network/dnsForwardingRulesets/virtualNetworkLinks@2022-07-01' = [for (id, i) in linkedVnetIds: {
  parent: ruleset
  name: 'link-${i}-${last(split(id, '/'))}'
  properties: {
    virtualNetwork: {
      id: id
    }
  }
}]

output rulesetId string = ruleset.id
output forwardingRuleId string = aliasRule.id
