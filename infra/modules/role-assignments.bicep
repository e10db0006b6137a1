// Role assignments for one principal at this resource group, named deterministically.
targetScope = 'resourceGroup'

param principalId string
param roleIds array

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roleIds: {
  name: guid(resourceGroup().id, principalId, role)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]
