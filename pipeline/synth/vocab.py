"""Slot vocabularies per category and the slot filler.

A message picks one product first and fills {size}/{spec}/{color}/{qty} from that product's kind, so
"空气炸锅 XL" or "口红 38码" never appear. Identifying values (order, phone, address, name, link) are
raw in a raw export and placeholders ([订单x] ...) in an anonymised one, decided once per message,
because a real export is one or the other; prices, dates and numbers are masked only sometimes.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

CATEGORIES = ("apparel", "beauty", "food", "baby", "electronics", "home")
SLOTS = (
    "product", "color", "size", "spec", "qty", "num", "price", "order", "phone", "address",
    "name", "link", "date", "time", "courier", "height", "weight", "age",
)
PII_SLOTS = frozenset({"order", "phone", "address", "name", "link"})

# kind -> values for the product-dependent slots, and the measure word used by {qty}
KINDS: dict[str, dict[str, tuple[str, ...] | str]] = {
    "top": {
        "size": ("S", "M", "L", "XL", "XXL", "2XL", "3XL", "均码", "165/88A", "170/92A", "175/96A", "160/84A", "m码", "L码", "xl"),
        "spec": ("加绒款", "薄款", "长袖", "短袖", "宽松版", "修身版", "加厚款", "春秋款", "oversize版"),
        "color": ("黑色", "白色", "米白", "杏色", "雾霾蓝", "藏青", "卡其", "燕麦色", "灰色", "浅粉", "军绿", "奶茶色", "酒红"),
        "unit": "件",
    },
    "bottom": {
        "size": ("S", "M", "L", "XL", "26", "27", "28", "29", "30", "31", "32", "34", "2XL", "160/66A", "170/74A"),
        "spec": ("九分", "长款", "加绒款", "直筒", "阔腿", "高腰款", "薄款", "小个子版"),
        "color": ("黑色", "浅蓝", "深蓝", "烟灰", "卡其", "白色", "咖啡色", "米色"),
        "unit": "条",
    },
    "dress": {
        "size": ("S", "M", "L", "XL", "XS", "均码", "155/80A", "160/84A", "165/88A"),
        "spec": ("长款", "中长款", "收腰款", "无袖", "泡泡袖", "加长版", "法式款"),
        "color": ("黑色", "碎花", "米白", "雾霾蓝", "酒红", "杏色", "墨绿", "藕粉"),
        "unit": "件",
    },
    "shoe": {
        "size": ("35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "36码", "37码", "38码", "39码", "40码", "41码", "42码", "43码", "44码", "37.5"),
        "spec": ("加绒款", "单鞋", "厚底款", "网面款", "低帮", "高帮", "宽楦版"),
        "color": ("白色", "黑色", "米白", "灰色", "白绿", "全黑", "燕麦色", "棕色"),
        "unit": "双",
    },
    "outer": {
        "size": ("S", "M", "L", "XL", "XXL", "3XL", "4XL", "170/92A", "175/96A", "180/100A"),
        "spec": ("中长款", "短款", "加厚款", "连帽款", "可拆卸内胆", "90绒", "轻薄款"),
        "color": ("黑色", "藏青", "卡其", "军绿", "米白", "驼色", "灰色", "焦糖色"),
        "unit": "件",
    },
    "skincare": {
        "size": ("30ml", "50ml", "100ml", "中样", "正装", "旅行装", "15g", "50g", "120ml"),
        "spec": ("清爽型", "滋润型", "补充装", "礼盒装", "干皮款", "油皮款", "套装", "单支装"),
        "color": ("原版", "新版", "升级版", "经典款"),
        "unit": "瓶",
    },
    "makeup": {
        "size": ("正装", "小样", "3.5g", "30ml", "15g", "迷你装"),
        "spec": ("哑光", "滋润", "丝绒", "水光款", "礼盒装", "替换芯"),
        "color": ("01号色", "02自然色", "象牙白", "豆沙色", "正红色", "#999", "奶茶色", "枫叶红", "1C0", "白皙色"),
        "unit": "支",
    },
    "fragrance": {
        "size": ("30ml", "50ml", "100ml", "5ml", "小样", "正装"),
        "spec": ("淡香", "浓香", "礼盒装", "EDP", "EDT"),
        "color": ("经典款", "限定款", "新版"),
        "unit": "瓶",
    },
    "snack": {
        "size": ("大包", "小包", "家庭装", "500g", "1kg", "250g", "100g"),
        "spec": ("500g装", "1kg装", "礼盒装", "散装", "整箱", "24袋装", "量贩装", "小包装"),
        "color": ("原味", "麻辣味", "五香味", "香辣味", "蜂蜜味", "海盐味", "微辣", "特辣"),
        "unit": "袋",
    },
    "fresh": {
        "size": ("大果", "中果", "小果", "特大果", "5斤装", "10斤装", "3斤装", "单果200g"),
        "spec": ("5斤装", "10斤装", "礼盒装", "净重3斤", "带箱5斤", "整箱"),
        "color": ("红心", "黄心", "原味", "普通款", "精品款"),
        "unit": "箱",
    },
    "drink": {
        "size": ("250g", "500g", "罐装", "盒装", "大罐", "50包", "30包"),
        "spec": ("罐装", "礼盒装", "袋装", "30包", "一斤装", "半斤装", "明前"),
        "color": ("原味", "经典款", "浓香", "清香", "无糖款"),
        "unit": "盒",
    },
    "diaper": {
        "size": ("NB", "S", "M", "L", "XL", "XXL", "XXXL", "S码", "M码", "L码", "XL码"),
        "spec": ("超薄款", "夜用款", "拉拉裤", "纸尿裤", "箱装", "大包装", "试用装"),
        "color": ("经典款", "新版", "升级款", "轻薄款"),
        "unit": "包",
    },
    "formula": {
        "size": ("一段", "二段", "三段", "四段", "800g", "400g", "900g", "一段800g", "三段900g"),
        "spec": ("一段", "二段", "三段", "800g罐装", "盒装", "新国标", "港版", "国行版"),
        "color": ("经典款", "新国标", "有机款"),
        "unit": "罐",
    },
    "babywear": {
        "size": ("59", "66", "73", "80", "90", "100", "110", "120", "73码", "80码", "90码", "100码", "110cm"),
        "spec": ("夹棉款", "薄款", "长袖", "短袖", "a类纯棉", "连体款", "分体款"),
        "color": ("粉色", "蓝色", "米白", "浅灰", "黄色", "卡其", "小熊款", "印花"),
        "unit": "件",
    },
    "babygear": {
        "size": ("标准款", "加大款", "0-4岁", "0-12岁", "6个月以上", "大号", "小号"),
        "spec": ("轻便款", "高景观款", "可躺可坐", "isofix接口", "旗舰款", "基础款", "带餐盘款"),
        "color": ("灰色", "米色", "卡其", "深蓝", "粉色", "黑色"),
        "unit": "个",
    },
    "kitchen": {
        "size": ("3L", "4.5L", "5L", "6L", "7L", "2L", "4L", "大容量"),
        "spec": ("可视款", "标准款", "触屏款", "升级款", "双锅款", "旗舰款", "基础款"),
        "color": ("白色", "黑色", "奶白", "薄荷绿", "香槟金", "灰色"),
        "unit": "台",
    },
    "phone_acc": {
        "size": ("iPhone15", "iPhone 15 Pro", "14pro", "Mate60", "小米14", "6.1寸", "6.7寸", "通用款"),
        "spec": ("20W", "65W", "10000mAh", "20000mAh", "快充版", "磁吸款", "Type-C接口", "PD快充"),
        "color": ("黑色", "白色", "透明", "远峰蓝", "星空灰", "粉色", "紫色"),
        "unit": "个",
    },
    "gadget": {
        "size": ("标准版", "Pro版", "Max版", "青春版", "128G", "256G", "512G", "8+256G", "12+512G", "27寸", "24寸"),
        "spec": ("256G", "128G", "8+256G", "国行", "港版", "标准版", "Pro版", "WiFi版", "蓝牙5.3", "降噪款"),
        "color": ("黑色", "白色", "银色", "星空灰", "远峰蓝", "香槟金", "石墨色", "午夜色"),
        "unit": "台",
    },
    "appliance": {
        "size": ("1.5匹", "1匹", "大1匹", "2匹", "3匹", "10公斤", "8公斤", "55寸", "65寸", "75寸", "60升", "500升"),
        "spec": ("一级能效", "变频", "新一级", "滚筒", "波轮", "洗烘一体", "标准安装", "挂机", "柜机"),
        "color": ("白色", "银色", "星岩灰", "玫瑰金", "深空灰"),
        "unit": "台",
    },
    "bedding": {
        "size": ("1.5米", "1.8米", "2米", "1.2米", "1.8*2.0m", "200*230", "150*200", "220*240"),
        "spec": ("全棉款", "60支", "40支", "加厚款", "冬被", "春秋被", "四件套", "三件套", "天丝款"),
        "color": ("奶白", "浅灰", "豆绿", "雾蓝", "米黄", "藕粉", "格子款", "纯色款"),
        "unit": "套",
    },
    "furniture": {
        "size": ("大号", "中号", "小号", "80cm", "1米2", "1米6", "三人位", "四层", "五层", "120*60"),
        "spec": ("加厚款", "带轮款", "免安装", "实木款", "带盖款", "加高款", "布艺款", "科技布"),
        "color": ("原木色", "胡桃色", "白色", "黑色", "浅灰", "奶油色"),
        "unit": "个",
    },
    "household": {
        "size": ("500ml", "750ml", "1L", "大号", "中号", "小号", "35*75cm", "70*140cm"),
        "spec": ("单只装", "两只装", "三条装", "礼盒装", "加厚款", "替换装", "316不锈钢"),
        "color": ("白色", "灰色", "奶油白", "雾霾蓝", "粉色", "墨绿"),
        "unit": "个",
    },
}

PRODUCTS: dict[str, tuple[tuple[str, str], ...]] = {
    "apparel": (
        ("连衣裙", "dress"), ("半身裙", "dress"), ("吊带裙", "dress"), ("T恤", "top"), ("卫衣", "top"),
        ("衬衫", "top"), ("针织开衫", "top"), ("打底衫", "top"), ("毛衣", "top"), ("polo衫", "top"),
        ("牛仔裤", "bottom"), ("阔腿裤", "bottom"), ("休闲裤", "bottom"), ("运动裤", "bottom"), ("西裤", "bottom"),
        ("羽绒服", "outer"), ("风衣", "outer"), ("冲锋衣", "outer"), ("毛呢大衣", "outer"), ("西装外套", "outer"),
        ("运动鞋", "shoe"), ("小白鞋", "shoe"), ("马丁靴", "shoe"), ("帆布鞋", "shoe"), ("老爹鞋", "shoe"),
    ),
    "beauty": (
        ("面霜", "skincare"), ("精华液", "skincare"), ("防晒霜", "skincare"), ("洗面奶", "skincare"),
        ("面膜", "skincare"), ("卸妆油", "skincare"), ("眼霜", "skincare"), ("爽肤水", "skincare"),
        ("身体乳", "skincare"), ("洗发水", "skincare"), ("口红", "makeup"), ("粉底液", "makeup"),
        ("气垫", "makeup"), ("眉笔", "makeup"), ("眼影盘", "makeup"), ("香水", "fragrance"),
    ),
    "food": (
        ("坚果礼盒", "snack"), ("牛肉干", "snack"), ("螺蛳粉", "snack"), ("零食大礼包", "snack"),
        ("辣条", "snack"), ("燕麦片", "snack"), ("月饼", "snack"), ("车厘子", "fresh"), ("猕猴桃", "fresh"),
        ("脐橙", "fresh"), ("大米", "fresh"), ("蜂蜜", "drink"), ("茶叶", "drink"), ("挂耳咖啡", "drink"),
        ("纯牛奶", "drink"),
    ),
    "baby": (
        ("纸尿裤", "diaper"), ("拉拉裤", "diaper"), ("湿巾", "diaper"), ("奶粉", "formula"), ("米粉", "formula"),
        ("婴儿连体衣", "babywear"), ("宝宝睡袋", "babywear"), ("学步鞋", "babywear"), ("儿童羽绒服", "babywear"),
        ("婴儿推车", "babygear"), ("安全座椅", "babygear"), ("儿童餐椅", "babygear"), ("奶瓶", "babygear"),
        ("吸奶器", "babygear"), ("爬行垫", "babygear"),
    ),
    "electronics": (
        ("空气炸锅", "kitchen"), ("电饭煲", "kitchen"), ("破壁机", "kitchen"), ("电水壶", "kitchen"),
        ("充电宝", "phone_acc"), ("手机壳", "phone_acc"), ("数据线", "phone_acc"), ("充电器", "phone_acc"),
        ("蓝牙耳机", "gadget"), ("平板电脑", "gadget"), ("智能手表", "gadget"), ("机械键盘", "gadget"),
        ("显示器", "gadget"), ("扫地机器人", "gadget"), ("投影仪", "gadget"), ("吹风机", "gadget"),
        ("电动牙刷", "gadget"), ("空调", "appliance"), ("洗衣机", "appliance"), ("冰箱", "appliance"),
        ("电视", "appliance"), ("热水器", "appliance"),
    ),
    "home": (
        ("四件套", "bedding"), ("乳胶枕", "bedding"), ("蚕丝被", "bedding"), ("凉席", "bedding"),
        ("床垫", "furniture"), ("沙发", "furniture"), ("置物架", "furniture"), ("收纳箱", "furniture"),
        ("书桌", "furniture"), ("窗帘", "household"), ("保温杯", "household"), ("拖把", "household"),
        ("毛巾", "household"), ("地毯", "household"), ("餐具套装", "household"), ("台灯", "household"),
    ),
}

_QTY_NUMBERS = ("一", "两", "2", "3", "三", "4", "5", "两", "十", "6")
_NUM = ("2", "3", "5", "10", "15", "20", "两", "三", "1", "4", "7", "30", "100")
_COURIERS = ("顺丰", "中通", "圆通", "韵达", "申通", "极兔", "京东快递", "邮政", "EMS", "德邦", "顺丰快递", "中通快递", "sf", "京东")
_DATES = ("明天", "后天", "周五", "下周一", "这周末", "月底", "双十一", "今天", "大后天", "下周三", "周六", "国庆前")
_TIMES = ("下午三点", "18:00", "晚上8点", "中午12点", "上午十点", "今晚", "明早", "9点半", "下午5点前", "晚上十点以后", "14:30", "早上")
_AGES = ("两岁", "8个月", "3岁", "一岁半", "六个月", "刚满月", "5岁", "十个月", "2岁3个月", "4岁半", "新生儿", "一岁", "三个月", "7岁")
_SURNAMES = "张王李赵刘陈杨黄周吴徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈"
_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超", "秀英",
          "霞", "平", "刚", "桂英", "子涵", "浩然", "雨桐", "欣怡", "梓萱", "宇轩", "建国", "晓燕", "思远", "佳琪", "一鸣")
_PLACES = (
    ("浙江省", "杭州市", "余杭区"), ("浙江省", "宁波市", "鄞州区"), ("广东省", "深圳市", "南山区"), ("广东省", "广州市", "天河区"),
    ("江苏省", "南京市", "鼓楼区"), ("江苏省", "苏州市", "工业园区"), ("", "北京市", "朝阳区"), ("", "上海市", "浦东新区"),
    ("四川省", "成都市", "武侯区"), ("湖北省", "武汉市", "洪山区"), ("山东省", "青岛市", "崂山区"), ("河南省", "郑州市", "金水区"),
    ("福建省", "厦门市", "思明区"), ("湖南省", "长沙市", "岳麓区"), ("陕西省", "西安市", "雁塔区"), ("", "重庆市", "渝北区"),
    ("安徽省", "合肥市", "蜀山区"), ("河北省", "石家庄市", "裕华区"), ("辽宁省", "沈阳市", "和平区"), ("云南省", "昆明市", "五华区"),
)
_ROADS = ("文一西路", "科技园南路", "中山路", "人民路", "解放大道", "建设路", "长江路", "学院路", "新华街", "滨江大道", "和平路", "东风路")
_PRICE_RANGES = {"apparel": (39, 699), "beauty": (29, 899), "food": (9, 399), "baby": (19, 2999), "electronics": (49, 6999), "home": (15, 3999)}
_CN_DIGITS = "零一二三四五六七八九"


@dataclass(frozen=True, slots=True)
class SlotStyle:
    """How identifying and numeric values are written in one message."""

    anonymised: bool
    mask_numbers: float  # probability to mask a price/date/number in an anonymised message
    platform_export: bool = False  # written as the platform's chat export writes it (`noise.as_exported`)


def _cn_small(n: int) -> str:
    if n < 10:
        return _CN_DIGITS[n]
    if n < 20:
        return "十" + (_CN_DIGITS[n % 10] if n % 10 else "")
    return _CN_DIGITS[n // 10] + "十" + (_CN_DIGITS[n % 10] if n % 10 else "")


def order_number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:  # Taobao / Tmall: 18-19 digits
        return str(rng.randint(1, 4)) + "".join(rng.choices(string.digits, k=rng.choice((17, 18))))
    if kind < 0.9:  # JD: 12 digits
        return str(rng.randint(2, 3)) + "".join(rng.choices(string.digits, k=11))
    prefix = rng.choice(("SF", "YT", "JT", "ZT", "sf", "JDX"))  # a waybill number
    return prefix + "".join(rng.choices(string.digits, k=rng.choice((12, 13, 15))))


def phone_number(rng: random.Random) -> str:
    head = rng.choice(("13", "15", "17", "18", "19")) + str(rng.randint(0, 9))
    rest = "".join(rng.choices(string.digits, k=8))
    style = rng.random()
    if style < 0.7:
        return head + rest
    if style < 0.85:
        return f"{head} {rest[:4]} {rest[4:]}"
    if style < 0.93:
        return f"{head}-{rest[:4]}-{rest[4:]}"
    return f"{head}****{rest[4:]}"


def address(rng: random.Random) -> str:
    province, city, district = rng.choice(_PLACES)
    road = rng.choice(_ROADS)
    number = rng.randint(1, 999)
    tail = rng.choice(("", f"{rng.randint(1, 30)}栋{rng.randint(1, 4)}单元{rng.randint(1, 30)}0{rng.randint(1, 4)}",
                       f"{rng.choice('东南西北新')}{rng.choice('苑园城庭湾')}小区{rng.randint(1, 20)}号楼", "菜鸟驿站", "丰巢柜"))
    if rng.random() < 0.3:
        return f"{city}{district}{road}{number}号{tail}"
    return f"{province}{city}{district}{road}{number}号{tail}"


def person_name(rng: random.Random) -> str:
    surname = rng.choice(_SURNAMES)
    if rng.random() < 0.12:
        return surname + rng.choice(("女士", "先生", "小姐"))
    return surname + rng.choice(_GIVEN)


def product_link(rng: random.Random, product: str) -> str:
    digits = lambda k: "".join(rng.choices(string.digits, k=k))  # noqa: E731
    alnum = lambda k: "".join(rng.choices(string.ascii_letters + string.digits, k=k))  # noqa: E731
    kind = rng.random()
    if kind < 0.3:
        return f"https://item.taobao.com/item.htm?id={rng.randint(5, 7)}{digits(11)}"
    if kind < 0.5:
        return f"https://detail.tmall.com/item.htm?id={rng.randint(5, 7)}{digits(11)}&skuId={digits(13)}"
    if kind < 0.7:
        return f"https://item.jd.com/{rng.randint(1, 9)}{digits(rng.choice((7, 10, 11)))}.html"
    if kind < 0.88:
        return f"https://m.tb.cn/h.{alnum(7)}?tk={alnum(10)}"
    if kind < 0.95:
        return f"【淘宝】https://m.tb.cn/h.{alnum(7)}?tk={alnum(11)} 「{product}」点击链接直接打开"
    return f"¥{alnum(11)}¥"


def price_text(rng: random.Random, category: str) -> str:
    low, high = _PRICE_RANGES[category]
    value = rng.randint(low, high)
    style = rng.random()
    if style < 0.15 and value > 100:
        return f"{_cn_small(value // 100)}百{'多' if rng.random() < 0.5 else ''}"
    if style < 0.3:
        value = f"{value}.{rng.choice((9, 8, 5, 0))}"
    text = str(value)
    return rng.choice((text, text, f"{text}元", f"¥{text}", f"{text}块", f"{text}块钱", f"￥{text}"))


def height_text(rng: random.Random) -> str:
    cm = rng.randint(150, 188)
    return rng.choice((str(cm), str(cm), f"{cm}cm", f"1米{cm - 100}", f"1.{cm - 100}m", f"身高{cm}"))


def weight_text(rng: random.Random) -> str:
    jin = rng.randint(85, 200)
    style = rng.random()
    if style < 0.55:
        return f"{jin}斤"
    if style < 0.75:
        return f"{jin // 2}kg"
    if style < 0.85:
        return f"{jin // 2}公斤"
    if style < 0.93:
        return f"{jin // 10 * 10}多斤"
    return f"一百{_cn_small(jin % 100 // 10)}" if 100 <= jin < 200 and jin % 100 >= 10 else f"{jin}斤"


def date_text(rng: random.Random) -> str:
    style = rng.random()
    if style < 0.45:
        return rng.choice(_DATES)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice((f"{month}月{day}号", f"{month}月{day}日", f"{day}号", f"{month}.{day}", f"{month}/{day}", f"2024-{month:02d}-{day:02d}"))


class SlotFiller:
    """Fills the slots of one message from one product of a category."""

    def __init__(self, category: str, rng: random.Random, style: SlotStyle, hint: str = ""):
        self.category, self.rng, self.style = category, rng, style
        # a seed that names a product literally (空调不制冷) keeps cards and sizes about that product
        named = [p for p in PRODUCTS[category] if p[0] in hint]
        self.product, kind = rng.choice(named or PRODUCTS[category])
        self.kind = KINDS[kind]

    def masked(self, slot: str) -> bool:
        """Whether this occurrence of `slot` is written as an export placeholder."""
        if not self.style.anonymised or slot not in _PLACEHOLDER_LABEL:
            return False
        return slot in PII_SLOTS or self.rng.random() < self.style.mask_numbers

    def placeholder(self, slot: str) -> str:
        return f"[{_PLACEHOLDER_LABEL[slot]}x]"

    def card_amount(self) -> str:
        """A paid amount as platform cards print it (¥129.00)."""
        low, high = _PRICE_RANGES[self.category]
        return self.rng.choice(("¥", "￥", "")) + f"{self.rng.randint(low, high)}.{self.rng.choice(('00', '90', '80', '50'))}"

    def card_time(self) -> str:
        """A payment time as platform cards print it (2024-10-03 14:22:05)."""
        rng = self.rng
        return f"2024-{rng.randint(8, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"

    def value(self, slot: str) -> str:
        rng = self.rng
        if self.masked(slot):
            return self.placeholder(slot)
        if slot == "product":
            return self.product
        if slot in ("size", "spec", "color"):
            return rng.choice(self.kind[slot])
        if slot == "qty":
            return rng.choice(_QTY_NUMBERS) + rng.choice((self.kind["unit"], self.kind["unit"], self.kind["unit"], "个"))
        if slot == "num":
            return rng.choice(_NUM)
        if slot == "price":
            return price_text(rng, self.category)
        if slot == "order":
            return order_number(rng)
        if slot == "phone":
            return phone_number(rng)
        if slot == "address":
            return address(rng)
        if slot == "name":
            return person_name(rng)
        if slot == "link":
            return product_link(rng, self.product)
        if slot == "date":
            return date_text(rng)
        if slot == "time":
            return rng.choice(_TIMES)
        if slot == "courier":
            return rng.choice(_COURIERS)
        if slot == "height":
            return height_text(rng)
        if slot == "weight":
            return weight_text(rng)
        if slot == "age":
            return rng.choice(_AGES)
        raise KeyError(slot)

    def fill(self, template: str) -> str:
        return _SLOT_RE.sub(lambda m: self.value(m.group(1)) if m.group(1) in SLOTS else m.group(0), template)

    def mask_bare_numbers(self, text: str) -> str:
        """An exporter that also masks numbers: 165斤 -> [数字x]斤 (not inside sizes, links or placeholders)."""
        return _BARE_NUMBER_RE.sub(lambda _m: self.placeholder("num"), text)


_SLOT_RE = re.compile(r"\{([a-z_]+)\}")
_BARE_NUMBER_RE = re.compile(r"(?<![A-Za-z0-9\[/.=:_-])\d+(?:\.\d+)?(?![A-Za-z0-9\]/:_-])")
_PLACEHOLDER_LABEL = {"order": "订单", "phone": "电话", "address": "地址", "name": "姓名", "link": "链接",
                      "price": "金额", "date": "日期", "num": "数字"}
