using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Live;

namespace LivePatch.Tests.Targets;

[Collection(ProcessTests.Name)]
public class MappingBoundsTests
{
    // The ioctl (Linux 6.11+) and the text read name the same mapping as MemoryMap for both ends of every line.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Each_address_is_found_in_the_mapping_the_memory_map_lists(bool readText)
    {
        using var sleeping = SleepingTarget.Start();
        var bounds = new MappingBounds(sleeping.Pid, readText);
        var map = MemoryMap.Read(sleeping.Pid);

        bounds.Refresh();
        try
        {
            foreach (var region in map.Regions.Where(r => r.Path != "[vsyscall]"))
            {
                Assert.Equal((region.Start, region.End), bounds.Find(region.Start));
                Assert.Equal((region.Start, region.End), bounds.Find(region.End - 1));
            }
            Assert.Null(bounds.Find(0x1000));
        }
        finally
        {
            bounds.Release();
        }
        if (readText)
            Assert.True(bounds.ReadsText);
        else if (Environment.OSVersion.Version >= new Version(6, 11))
            Assert.False(bounds.ReadsText, $"PROCMAP_QUERY is used on Linux {Environment.OSVersion.Version}");
    }
}
