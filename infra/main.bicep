// avd-image-factory on Azure: `azd up` provisions this at subscription scope.
// Identity only (no keys), least privilege derived from the code (roles/app-role.json),
// every app setting the code reads is set here and documented in docs/settings.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names and tags every resource (azd-env-name).')
param environmentName string

@minLength(1)
@description('Region of the app, its storage, topic and build network. Must offer Flex Consumption.')
param location string

@description('Object id of the person running azd: granted the app role Operator/Approver nowhere, only read on the app resource group for troubleshooting. Leave empty to skip.')
param principalId string = ''

@description('Resource group the app, its storage and monitoring live in (created).')
param appResourceGroupName string = 'rg-${environmentName}'

@description('Resource group for temporary build and validation VMs, and the build network (created).')
param buildResourceGroupName string = 'rg-image-factory'

@description('Resource group of the Azure Compute Gallery the catalogue publishes to (created if absent).')
param galleryResourceGroupName string = 'rg-avd-images'

@description('Resource groups of the catalogue that already exist and must be reachable: host pools, session-host sources (from infra/catalogue-scopes.json by default).')
param catalogueResourceGroups array = loadJsonContent('catalogue-scopes.json').existingResourceGroups

@description('Bring your own build subnet (resource id); empty: a VNet with a NAT gateway and a no-inbound NSG is created in the build resource group.')
param existingBuildSubnetId string = ''

@description('Address space of the created build VNet.')
param buildAddressPrefix string = '10.90.0.0/24'

@description('Python version of the Functions runtime; the one CI tests with.')
@allowed(['3.11', '3.12'])
param pythonVersion string = '3.11'

@description('Subscriptions whose events the app accepts (comma-separated); empty: this one.')
param allowedSubscriptions string = ''

@description('Client id of the Entra app registration in front of the API (App Service Authentication). Create it first with the app roles Reader, Operator and Approver (README, "Deploy to Azure"): every route needs an authenticated principal.')
@minLength(36)
@maxLength(36)
param apiClientId string

@description('Hosts a request\'s callback_url may name (comma-separated); empty: callbacks off.')
param callbackAllowedHosts string = ''

@secure()
@description('HMAC-SHA256 key that signs callback notices; kept in Key Vault, never in app settings. Empty: callbacks off.')
param callbackSigningSecret string = ''

@description('E-mail address for alerts (failed build, paused rollout, dead-lettered events); empty: no action group.')
param alertEmail string = ''

var tags = { 'azd-env-name': environmentName, workload: 'avd-image-factory' }
var suffix = take(uniqueString(subscription().id, environmentName, location), 8)

resource appGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: appResourceGroupName
  location: location
  tags: tags
}

resource buildGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: buildResourceGroupName
  location: location
  tags: tags
}

resource galleryGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: galleryResourceGroupName
  location: location
  tags: tags
}

module network 'modules/network.bicep' = if (empty(existingBuildSubnetId)) {
  name: 'network-${suffix}'
  scope: buildGroup
  params: { location: location, tags: tags, suffix: suffix, addressPrefix: buildAddressPrefix }
}

var buildSubnetId = empty(existingBuildSubnetId) ? network!.outputs.subnetId : existingBuildSubnetId

module app 'modules/app.bicep' = {
  name: 'app-${suffix}'
  scope: appGroup
  params: {
    location: location
    tags: tags
    suffix: suffix
    environmentName: environmentName
    pythonVersion: pythonVersion
    buildResourceGroupName: buildGroup.name
    buildSubnetId: buildSubnetId
    allowedSubscriptions: empty(allowedSubscriptions) ? subscription().subscriptionId : allowedSubscriptions
    alertEmail: alertEmail
    buildVmIdentityId: buildIdentity.outputs.identityId
    apiClientId: apiClientId
    callbackAllowedHosts: callbackAllowedHosts
    callbackSigningSecret: callbackSigningSecret
  }
}

// The build VM's identity: it may only publish the sysprep signal to the app's topic.
module buildIdentity 'modules/build-identity.bicep' = {
  name: 'build-identity-${suffix}'
  scope: buildGroup
  params: { location: location, tags: tags, suffix: suffix }
}

module topicSender 'modules/topic-sender.bicep' = {
  name: 'topic-sender-${suffix}'
  scope: appGroup
  params: { topicName: app.outputs.topicName, principalId: buildIdentity.outputs.principalId }
}

// The app's custom role: exactly the operations the code calls (roles/app-role.json).
var appRole = loadJsonContent('roles/app-role.json')

resource appRoleDefinition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'avd-image-factory-app')
  properties: {
    roleName: '${appRole.roleName} (${environmentName})'
    description: appRole.description
    type: 'CustomRole'
    permissions: [{ actions: appRole.actions, notActions: [] }]
    assignableScopes: [subscription().id]
  }
}

// The marketplace watch lists image versions at subscription scope: that single read, nothing else.
resource marketplaceRoleDefinition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'avd-image-factory-marketplace')
  properties: {
    roleName: 'AVD Image Factory marketplace reader (${environmentName})'
    description: 'Lists marketplace image versions (the hourly watch); no other read.'
    type: 'CustomRole'
    permissions: [{ actions: appRole.marketplaceRead, notActions: [] }]
    assignableScopes: [subscription().id]
  }
}

resource marketplaceRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'marketplace-read')
  properties: {
    principalId: app.outputs.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: marketplaceRoleDefinition.id
  }
}

// The app role at every resource group the catalogue names: build, gallery, and the existing ones.
module buildAccess 'modules/group-access.bicep' = {
  name: 'access-build-${suffix}'
  scope: buildGroup
  params: { principalId: app.outputs.principalId, roleDefinitionId: appRoleDefinition.id }
}

module galleryAccess 'modules/group-access.bicep' = {
  name: 'access-gallery-${suffix}'
  scope: galleryGroup
  params: { principalId: app.outputs.principalId, roleDefinitionId: appRoleDefinition.id }
}

module catalogueAccess 'modules/group-access.bicep' = [for group in catalogueResourceGroups: {
  name: 'access-${take(group, 40)}-${suffix}'
  scope: resourceGroup(group)
  params: { principalId: app.outputs.principalId, roleDefinitionId: appRoleDefinition.id }
}]

module operatorRead 'modules/group-access.bicep' = if (!empty(principalId)) {
  name: 'operator-read-${suffix}'
  scope: appGroup
  params: {
    principalId: principalId
    principalType: 'User'
    // Reader: look at the app, its logs and settings; change nothing.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'acdd72a7-3385-48ef-bd42-f606fba81ae7')
  }
}

// Outputs azd reads (AZURE_*) and the post-deploy hook uses.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = appGroup.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_FUNCTION_APP_ID string = app.outputs.functionAppId
output EVENTGRID_TOPIC_ID string = app.outputs.topicId
output EVENTGRID_TOPIC_ENDPOINT string = app.outputs.topicEndpoint
output DEADLETTER_CONTAINER_ID string = app.outputs.deadLetterContainerId
output BUILD_RESOURCE_GROUP string = buildGroup.name
output GALLERY_RESOURCE_GROUP string = galleryGroup.name
output BUILD_SUBNET_ID string = buildSubnetId
output BUILD_VM_IDENTITY_ID string = buildIdentity.outputs.identityId
