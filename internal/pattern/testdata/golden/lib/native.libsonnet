{
  get(object=null, filter, default=null, prefix=''):: std.native('get')(object, filter, default, prefix),
  getConfig():: std.native('getConfig')(),
  getEnv(key, fallback=null, cache=false):: std.native('getEnv')(key, fallback, cache),
  regexMatch(regex, string):: std.native('regexMatch')(regex, string),
  render(string):: std.native('render')(string),
}
