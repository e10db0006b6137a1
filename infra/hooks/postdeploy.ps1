# After `azd deploy` on Windows: the same as postdeploy.sh, through WSL or Git Bash's sh.
$ErrorActionPreference = 'Stop'
sh "$PSScriptRoot/postdeploy.sh"
if ($LASTEXITCODE -ne 0) { throw "postdeploy.sh failed with exit code $LASTEXITCODE" }
