local step = import '../lib/step.libsonnet';
local trace = '/tmp/etcha-golden.trace';

{
  audience: ['web'],
  build: [
    {
      id: 'manifest',
      always: true,
      change: 'echo manifest-1',
      onChange: ['etcha:buildManifest', 'etcha:runVar_release'],
    },
  ],
  id: 'golden',
  issuer: 'tests',
  subject: 'app',
  run: [
    step('one', trace),
    {
      id: 'group',
      commands: [step('two', trace)],
    },
  ],
  runVars: { release: 'none', owner: 'ops' },
}
