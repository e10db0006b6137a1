// The build VM's user-assigned identity: it holds EventGrid Data Sender on the app's topic only,
// so the sysprep script can publish ImageFactory.SysprepFinished with an IMDS token (no key).
targetScope = 'resourceGroup'

param location string
param tags object
param suffix string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-imagefactory-build-${suffix}'
  location: location
  tags: tags
}

output identityId string = identity.id
output principalId string = identity.properties.principalId
