using System.Collections.Immutable;
using System.Reflection;
using System.Reflection.Emit;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;

namespace Relay.Unit.Tests.Architecture;

/// <summary>
/// The dependency graph between the namespaces of one compiled assembly, read from its metadata with
/// System.Reflection.Metadata (nothing is loaded or executed). A type depends on every type of the same
/// assembly that it names in its base type, interfaces, generic constraints, custom attributes, field,
/// property, event and method signatures, local variables, and in any metadata token in its method bodies
/// (calls, field accesses, <c>newobj</c>, casts, <c>ldtoken</c>). Compiler-generated types (lambdas' closures,
/// async and iterator state machines) are nested, so what they use counts for the namespace of their outer type.
/// </summary>
internal sealed class NamespaceDependencyGraph
{
    private static readonly Dictionary<short, OperandType> OperandTypes = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(static f => (OpCode)f.GetValue(null)!)
        .ToDictionary(static o => o.Value, static o => o.OperandType);

    private readonly MetadataReader _reader;
    private readonly Func<string, string?> _node;
    private readonly Dictionary<string, Dictionary<string, (string From, string To)>> _edges = new(StringComparer.Ordinal);

    private NamespaceDependencyGraph(MetadataReader reader, Func<string, string?> node)
    {
        _reader = reader;
        _node = node;
    }

    /// <summary>Edges between nodes, each with one pair of types (from, to) that proves it.</summary>
    public IReadOnlyDictionary<string, Dictionary<string, (string From, string To)>> Edges => _edges;

    /// <summary>
    /// Reads <paramref name="assemblyPath"/>. <paramref name="node"/> maps a namespace to its node in the graph,
    /// or null to leave the namespace out.
    /// </summary>
    public static NamespaceDependencyGraph Read(string assemblyPath, Func<string, string?> node)
    {
        using var stream = File.OpenRead(assemblyPath);
        using var pe = new PEReader(stream, PEStreamOptions.PrefetchEntireImage);
        var graph = new NamespaceDependencyGraph(pe.GetMetadataReader(), node);
        foreach (var handle in graph._reader.TypeDefinitions)
        {
            graph.AddType(pe, handle);
        }

        return graph;
    }

    /// <summary>Strongly connected components with more than one node: each one is a cycle (or several).</summary>
    public List<List<string>> Cycles()
    {
        var nodes = _edges.Keys.Concat(_edges.Values.SelectMany(static e => e.Keys)).Distinct().Order(StringComparer.Ordinal).ToList();
        var index = new Dictionary<string, int>();
        var low = new Dictionary<string, int>();
        var stack = new Stack<string>();
        var onStack = new HashSet<string>();
        var components = new List<List<string>>();
        var counter = 0;

        void Visit(string v)
        {
            index[v] = low[v] = counter++;
            stack.Push(v);
            onStack.Add(v);
            foreach (var w in Successors(v))
            {
                if (!index.ContainsKey(w))
                {
                    Visit(w);
                    low[v] = Math.Min(low[v], low[w]);
                }
                else if (onStack.Contains(w))
                {
                    low[v] = Math.Min(low[v], index[w]);
                }
            }

            if (low[v] == index[v])
            {
                var component = new List<string>();
                string w;
                do
                {
                    w = stack.Pop();
                    onStack.Remove(w);
                    component.Add(w);
                }
                while (w != v);
                if (component.Count > 1)
                {
                    component.Sort(StringComparer.Ordinal);
                    components.Add(component);
                }
            }
        }

        foreach (var v in nodes.Where(v => !index.ContainsKey(v)))
        {
            Visit(v);
        }

        return components;
    }

    /// <summary>The shortest path from <paramref name="from"/> back to itself inside <paramref name="within"/>.</summary>
    public List<string> ShortestCycleThrough(string from, IReadOnlyCollection<string> within)
    {
        var previous = new Dictionary<string, string>();
        var queue = new Queue<string>();
        queue.Enqueue(from);
        while (queue.Count > 0)
        {
            var v = queue.Dequeue();
            foreach (var w in Successors(v).Where(within.Contains))
            {
                if (w == from)
                {
                    var path = new List<string> { from };
                    for (var at = v; at != from; at = previous[at])
                    {
                        path.Insert(1, at);
                    }

                    path.Add(from);
                    return path;
                }

                if (previous.TryAdd(w, v))
                {
                    queue.Enqueue(w);
                }
            }
        }

        return [];
    }

    private IEnumerable<string> Successors(string v) =>
        _edges.TryGetValue(v, out var to) ? to.Keys.Order(StringComparer.Ordinal) : [];

    private void AddType(PEReader pe, TypeDefinitionHandle handle)
    {
        var type = _reader.GetTypeDefinition(handle);
        var from = NodeOf(handle);
        if (from is null)
        {
            return;
        }

        var fromName = FullName(handle);
        void Use(EntityHandle target) => AddEdge(from, fromName, target);

        Use(type.BaseType);
        foreach (var i in type.GetInterfaceImplementations())
        {
            Use(_reader.GetInterfaceImplementation(i).Interface);
        }

        AddGenericParameters(type.GetGenericParameters(), Use);
        AddAttributes(type.GetCustomAttributes(), Use);
        foreach (var f in type.GetFields())
        {
            var field = _reader.GetFieldDefinition(f);
            AddSignature(field.Signature, Use);
            AddAttributes(field.GetCustomAttributes(), Use);
        }

        foreach (var p in type.GetProperties())
        {
            var property = _reader.GetPropertyDefinition(p);
            AddSignature(property.Signature, Use);
            AddAttributes(property.GetCustomAttributes(), Use);
        }

        foreach (var e in type.GetEvents())
        {
            Use(_reader.GetEventDefinition(e).Type);
        }

        foreach (var m in type.GetMethods())
        {
            var method = _reader.GetMethodDefinition(m);
            AddSignature(method.Signature, Use);
            AddAttributes(method.GetCustomAttributes(), Use);
            AddGenericParameters(method.GetGenericParameters(), Use);
            if (method.RelativeVirtualAddress != 0)
            {
                AddBody(pe.GetMethodBody(method.RelativeVirtualAddress), Use);
            }
        }
    }

    private void AddBody(MethodBodyBlock body, Action<EntityHandle> use)
    {
        if (!body.LocalSignature.IsNil)
        {
            AddSignature(_reader.GetStandaloneSignature(body.LocalSignature).Signature, use);
        }

        var il = body.GetILReader();
        while (il.RemainingBytes > 0)
        {
            short value = il.ReadByte();
            if (value == 0xFE)
            {
                value = unchecked((short)(0xFE00 | il.ReadByte()));
            }

            switch (OperandTypes[value])
            {
                case OperandType.InlineNone:
                    break;
                case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar:
                    il.Offset += 1;
                    break;
                case OperandType.InlineVar:
                    il.Offset += 2;
                    break;
                case OperandType.InlineI8 or OperandType.InlineR:
                    il.Offset += 8;
                    break;
                case OperandType.InlineSwitch:
                    var targets = il.ReadInt32();
                    il.Offset += 4 * targets;
                    break;
                case OperandType.InlineField or OperandType.InlineMethod or OperandType.InlineTok or OperandType.InlineType:
                    use(MetadataTokens.EntityHandle(il.ReadInt32()));
                    break;
                default: // InlineBrTarget, InlineI, InlineSig, InlineString, ShortInlineR
                    il.Offset += 4;
                    break;
            }
        }
    }

    private void AddSignature(BlobHandle signature, Action<EntityHandle> use)
    {
        if (signature.IsNil)
        {
            return;
        }

        var decoder = new SignatureDecoder<List<EntityHandle>, object?>(HandleCollector.Instance, _reader, genericContext: null);
        var blob = _reader.GetBlobReader(signature);
        var kind = blob.ReadSignatureHeader().Kind;
        blob.Reset();
        var handles = kind switch
        {
            SignatureKind.Field => decoder.DecodeFieldSignature(ref blob),
            SignatureKind.LocalVariables => [.. decoder.DecodeLocalSignature(ref blob).SelectMany(static t => t)],
            SignatureKind.MethodSpecification => [.. decoder.DecodeMethodSpecificationSignature(ref blob).SelectMany(static t => t)],
            SignatureKind.Method or SignatureKind.Property => Flatten(decoder.DecodeMethodSignature(ref blob)),
            _ => [],
        };
        foreach (var handle in handles)
        {
            use(handle);
        }
    }

    private List<EntityHandle> DecodeTypeSpecification(TypeSpecificationHandle handle)
    {
        var decoder = new SignatureDecoder<List<EntityHandle>, object?>(HandleCollector.Instance, _reader, genericContext: null);
        var blob = _reader.GetBlobReader(_reader.GetTypeSpecification(handle).Signature);
        return decoder.DecodeType(ref blob);
    }

    private static List<EntityHandle> Flatten(MethodSignature<List<EntityHandle>> signature) =>
        [.. signature.ReturnType, .. signature.ParameterTypes.SelectMany(static t => t)];

    private void AddAttributes(CustomAttributeHandleCollection attributes, Action<EntityHandle> use)
    {
        foreach (var a in attributes)
        {
            use(_reader.GetCustomAttribute(a).Constructor);
        }
    }

    private void AddGenericParameters(GenericParameterHandleCollection parameters, Action<EntityHandle> use)
    {
        foreach (var p in parameters)
        {
            foreach (var c in _reader.GetGenericParameter(p).GetConstraints())
            {
                use(_reader.GetGenericParameterConstraint(c).Type);
            }
        }
    }

    private void AddEdge(string from, string fromName, EntityHandle target)
    {
        foreach (var type in TypesOf(target, depth: 0))
        {
            var to = NodeOf(type);
            if (to is null || to == from)
            {
                continue;
            }

            if (!_edges.TryGetValue(from, out var targets))
            {
                _edges[from] = targets = new Dictionary<string, (string, string)>(StringComparer.Ordinal);
            }

            targets.TryAdd(to, (fromName, FullName(type)));
        }
    }

    /// <summary>The types of this assembly that a token names: itself, its declaring type, its generic arguments.</summary>
    private IEnumerable<TypeDefinitionHandle> TypesOf(EntityHandle handle, int depth)
    {
        if (handle.IsNil || depth > 8)
        {
            yield break;
        }

        switch (handle.Kind)
        {
            case HandleKind.TypeDefinition:
                yield return (TypeDefinitionHandle)handle;
                break;
            case HandleKind.FieldDefinition:
                yield return _reader.GetFieldDefinition((FieldDefinitionHandle)handle).GetDeclaringType();
                break;
            case HandleKind.MethodDefinition:
                yield return _reader.GetMethodDefinition((MethodDefinitionHandle)handle).GetDeclaringType();
                break;
            case HandleKind.MemberReference:
                var member = _reader.GetMemberReference((MemberReferenceHandle)handle);
                foreach (var t in TypesOf(member.Parent, depth + 1).Concat(TypesInBlob(member.Signature, depth)))
                {
                    yield return t;
                }

                break;
            case HandleKind.MethodSpecification:
                var spec = _reader.GetMethodSpecification((MethodSpecificationHandle)handle);
                foreach (var t in TypesOf(spec.Method, depth + 1).Concat(TypesInBlob(spec.Signature, depth)))
                {
                    yield return t;
                }

                break;
            case HandleKind.TypeSpecification:
                foreach (var t in DecodeTypeSpecification((TypeSpecificationHandle)handle).SelectMany(h => TypesOf(h, depth + 1)))
                {
                    yield return t;
                }

                break;
            default: // TypeReference (another assembly), StandaloneSignature, ...
                break;
        }
    }

    private IEnumerable<TypeDefinitionHandle> TypesInBlob(BlobHandle signature, int depth)
    {
        var found = new List<EntityHandle>();
        AddSignature(signature, found.Add);
        return found.SelectMany(h => TypesOf(h, depth + 1));
    }

    private string? NodeOf(TypeDefinitionHandle handle) => _node(NamespaceOf(handle));

    private string NamespaceOf(TypeDefinitionHandle handle)
    {
        var type = _reader.GetTypeDefinition(handle);
        var declaring = type.GetDeclaringType();
        return declaring.IsNil ? _reader.GetString(type.Namespace) : NamespaceOf(declaring);
    }

    private string FullName(TypeDefinitionHandle handle)
    {
        var type = _reader.GetTypeDefinition(handle);
        var declaring = type.GetDeclaringType();
        var name = _reader.GetString(type.Name);
        return declaring.IsNil ? _reader.GetString(type.Namespace) + "." + name : FullName(declaring) + "+" + name;
    }

    /// <summary>Collects the type handles a signature names; what they resolve to is <see cref="TypesOf"/>'s job.</summary>
    private sealed class HandleCollector : ISignatureTypeProvider<List<EntityHandle>, object?>
    {
        public static readonly HandleCollector Instance = new();

        public List<EntityHandle> GetPrimitiveType(PrimitiveTypeCode typeCode) => [];

        public List<EntityHandle> GetTypeFromDefinition(MetadataReader reader, TypeDefinitionHandle handle, byte rawTypeKind) => [handle];

        public List<EntityHandle> GetTypeFromReference(MetadataReader reader, TypeReferenceHandle handle, byte rawTypeKind) => [];

        public List<EntityHandle> GetTypeFromSpecification(MetadataReader reader, object? genericContext, TypeSpecificationHandle handle, byte rawTypeKind) => [handle];

        public List<EntityHandle> GetSZArrayType(List<EntityHandle> elementType) => elementType;

        public List<EntityHandle> GetArrayType(List<EntityHandle> elementType, ArrayShape shape) => elementType;

        public List<EntityHandle> GetByReferenceType(List<EntityHandle> elementType) => elementType;

        public List<EntityHandle> GetPointerType(List<EntityHandle> elementType) => elementType;

        public List<EntityHandle> GetPinnedType(List<EntityHandle> elementType) => elementType;

        public List<EntityHandle> GetGenericInstantiation(List<EntityHandle> genericType, ImmutableArray<List<EntityHandle>> typeArguments) =>
            [.. genericType, .. typeArguments.SelectMany(static t => t)];

        public List<EntityHandle> GetGenericMethodParameter(object? genericContext, int index) => [];

        public List<EntityHandle> GetGenericTypeParameter(object? genericContext, int index) => [];

        public List<EntityHandle> GetFunctionPointerType(MethodSignature<List<EntityHandle>> signature) => Flatten(signature);

        public List<EntityHandle> GetModifiedType(List<EntityHandle> modifier, List<EntityHandle> unmodifiedType, bool isRequired) =>
            [.. modifier, .. unmodifiedType];
    }
}
