using System.Reflection;
using System.Runtime.CompilerServices;
using LivePatch.Targets;

namespace LivePatch.Poke;

/// <summary>
/// Compiles, before the first stop, the code that runs while a target's threads are held: otherwise the first
/// stop of a run would also wait for the JIT compiler, milliseconds while every thread is stopped.
/// </summary>
internal static class StopWindowCode
{
    private static readonly Lazy<bool> Compiled = new(CompileAll);

    public static void EnsureCompiled() => _ = Compiled.Value;

    private static bool CompileAll()
    {
        foreach (var type in new[] { typeof(StopTheWorld), typeof(TextPoker), typeof(PokeSite), typeof(PokeOptions), typeof(StackScanner), typeof(StackScan), typeof(StackUnwinder), typeof(StackUnwind), typeof(FrameHit), typeof(CodeMap), typeof(Elf.CallFrameInfo), typeof(Elf.DwarfExpression), typeof(MappingBounds), typeof(AttachedProcess), typeof(PtraceSession), typeof(TargetProcess), typeof(ProcessMemory), typeof(Targets.Native.Libc) })
            foreach (var nested in Flatten(type))
                foreach (var method in nested.GetMethods(BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                    if (!method.IsAbstract && !method.ContainsGenericParameters)
                        RuntimeHelpers.PrepareMethod(method.MethodHandle);
        return true;
    }

    private static IEnumerable<Type> Flatten(Type type) =>
        type.GetNestedTypes(BindingFlags.NonPublic | BindingFlags.Public).Where(t => !t.ContainsGenericParameters).SelectMany(Flatten).Prepend(type);
}
