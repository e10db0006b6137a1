// avd-image-factory: the Function App and what it needs, identity-based, no keys.
// Deploy: az deployment group create -g <rg> -f infra/main.bicep -p name=<prefix>
// Every app setting set here is documented in docs/settings.md.

targetScope = 'resourceGroup'

@description('Short prefix for resource names (3-11 lowercase letters or digits).')
@minLength(3)
@maxLength(11)
param name string

param location string = resourceGroup().location

@description('Resource group that holds temporary build resources (VMs, disks, snapshots).')
param buildResourceGroup string = resourceGroup().name

@description('Resource group of the Azure Compute Gallery the factory publishes to.')
param galleryResourceGroup string = resourceGroup().name

@description('Subscriptions whose events the app accepts (comma-separated); default: this one.')
param allowedSubscriptions string = subscription().subscriptionId

var suffix = uniqueString(resourceGroup().id, name)
var storageName = toLower('st${name}${take(suffix, 8)}')
var taskHub = 'avdimagefactory'

// Built-in role definition ids (least privilege for what each identity does).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  virtualMachineContributor: '9980e02c-c2be-4d73-94e8-173b1dc7cf3c'
  diskSnapshotContributor: '7efff54f-a5b4-42b5-a1c5-5411624893ce'
  computeGalleryArtifactsPublisher: '85a2d0d9-2eba-4c9c-b355-11c2cc0788ab'
  networkContributor: '4d97b98b-1d4f-4787-a291-c67834d212e7'
  desktopVirtualizationHostPoolContributor: 'e307426c-f9b6-4e81-87de-d99efb3c32bc'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false // identity only: no keys exist to leak
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${name}-${suffix}'
  location: location
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}-${suffix}'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

resource topic 'Microsoft.EventGrid/topics@2024-06-01-preview' = {
  name: 'egt-${name}-${suffix}'
  location: location
  properties: { inputSchema: 'EventGridSchema', disableLocalAuth: true }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}-${suffix}'
  location: location
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  kind: 'functionapp'
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${name}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}deployments'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      runtime: { name: 'python', version: '3.11' }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'TASKHUB_NAME', value: taskHub }
        { name: 'AZURE_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'ALLOWED_SUBSCRIPTIONS', value: allowedSubscriptions }
        { name: 'FACTORY_RESOURCE_GROUP', value: buildResourceGroup }
        { name: 'FACTORY_LOCATION', value: location }
        { name: 'IMAGE_CATALOGUE_PATH', value: 'catalogue/images.yaml' }
        { name: 'EVENTGRID_TOPIC_ENDPOINT', value: topic.properties.endpoint }
        { name: 'POLL_INTERVAL_SECONDS', value: '30' }
        { name: 'ARM_MAX_RETRIES', value: '3' }
      ]
    }
  }
}

// Role assignments: names are deterministic (guid of scope, principal and role), so a
// redeployment updates rather than duplicates them.
var storageRoles = [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]

resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in storageRoles: {
  name: guid(storage.id, app.id, role)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource topicAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, app.id, roles.eventGridDataSender)
  scope: topic
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

// Build resources: VMs, disks and snapshots only in the build resource group.
module buildAccess 'modules/role-assignments.bicep' = {
  name: 'build-access-${suffix}'
  scope: resourceGroup(buildResourceGroup)
  params: {
    principalId: app.identity.principalId
    roleIds: [roles.virtualMachineContributor, roles.diskSnapshotContributor, roles.networkContributor]
  }
}

// Publishing: gallery image versions only in the gallery's resource group.
module galleryAccess 'modules/role-assignments.bicep' = {
  name: 'gallery-access-${suffix}'
  scope: resourceGroup(galleryResourceGroup)
  params: {
    principalId: app.identity.principalId
    roleIds: [roles.computeGalleryArtifactsPublisher]
  }
}

output functionAppName string = app.name
output eventGridTopicEndpoint string = topic.properties.endpoint
output principalId string = app.identity.principalId
