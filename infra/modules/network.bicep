// The build network: one subnet for build and validation VMs, outbound through a NAT gateway
// (Windows Update, winget, choco), no inbound at all (NSG), no public IP on any VM.
targetScope = 'resourceGroup'

param location string
param tags object
param suffix string
param addressPrefix string

resource outboundIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: 'pip-imagefactory-nat-${suffix}'
  location: location
  tags: tags
  sku: { name: 'Standard' }
  zones: ['1']
  properties: { publicIPAllocationMethod: 'Static', publicIPAddressVersion: 'IPv4' }
}

resource nat 'Microsoft.Network/natGateways@2024-05-01' = {
  name: 'ng-imagefactory-${suffix}'
  location: location
  tags: tags
  sku: { name: 'Standard' }
  zones: ['1']
  properties: {
    idleTimeoutInMinutes: 10
    publicIpAddresses: [{ id: outboundIp.id }]
  }
}

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-imagefactory-build-${suffix}'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'deny-all-inbound'
        properties: {
          priority: 4096
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: '*'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: 'vnet-image-factory'
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: [addressPrefix] }
    subnets: [
      {
        name: 'snet-build'
        properties: {
          addressPrefix: addressPrefix
          natGateway: { id: nat.id }
          networkSecurityGroup: { id: nsg.id }
          defaultOutboundAccess: false
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

output subnetId string = '${vnet.id}/subnets/snet-build'
